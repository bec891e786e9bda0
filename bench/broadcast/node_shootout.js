// bench/broadcast/node_shootout.js — the node `ws` side of bench/broadcast/run:
// the websocket-shootout's broadcast server (its js/ws entry, on ws 8).
//   NODE_PATH=/usr/share/nodejs node bench/broadcast/node_shootout.js PORT
// {"type":"broadcast","payload":P} is sent to every client (wss.clients) as
// {"type":"broadcast","payload":P}, then {"type":"broadcastResult","payload":P}
// to the sender. No compression, as in the shootout.
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, backlog: 4096 });

wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    let msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    if (msg.type === 'broadcast') {
      const out = JSON.stringify({ type: 'broadcast', payload: msg.payload });
      for (const c of wss.clients) c.send(out);
      ws.send(JSON.stringify({ type: 'broadcastResult', payload: msg.payload }));
    }
  });
  ws.on('error', () => {});
});
wss.on('listening', () => console.log(`listening on ws://127.0.0.1:${wss.address().port}`));
