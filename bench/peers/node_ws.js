// Echo server on Debian's node-ws (run with NODE_PATH=/usr/share/nodejs).
// usage: node node_ws.js [PORT]   (or PORT=...; DEFLATE=1 enables permessage-deflate)
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || process.env.PORT || 9003);
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  backlog: 4096,
  maxPayload: 64 * 1024 * 1024,
  perMessageDeflate: process.env.DEFLATE === '1',
  clientTracking: false,
});

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
wss.on('listening', () => console.error(`node_ws: listening on 127.0.0.1:${port}`));
