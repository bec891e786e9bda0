// bench/topics/node_broadcast.js — the node `ws` side of bench/topics/run.
//   NODE_PATH=/usr/share/nodejs node bench/topics/node_broadcast.js PORT
// /sub connections join a set; every message on /pub is sent to each of them
// in a loop (the broadcast idiom of the ws README). No compression, unless
// DEFLATE=1: then permessage-deflate with luaws's defaults (level 1, messages
// under 64 bytes uncompressed); ws compresses each send on its own socket.
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const subs = new Set();
const perMessageDeflate = process.env.DEFLATE === '1' ? { threshold: 64, zlibDeflateOptions: { level: 1 } } : false;
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate, clientTracking: false, backlog: 4096 });

wss.on('connection', (ws, req) => {
  if (req.url === '/pub') {
    ws.on('message', (data, isBinary) => {
      for (const s of subs) s.send(data, { binary: isBinary });
    });
  } else {
    subs.add(ws);
    ws.on('close', () => subs.delete(ws));
  }
  ws.on('error', () => {});
});
wss.on('listening', () => console.log(`listening on ws://127.0.0.1:${wss.address().port}`));
