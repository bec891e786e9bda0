// node_echo.js — an independent echo server on the `ws` library, to check
// the conformance suite itself. Echoes every message in kind, no greeting.
// Prints the same startup line as luaws, so spec/support/server.lua can
// drive it.
//   NODE_PATH=/usr/share/nodejs node node_echo.js [--deflate=off|shared|dedicated]
//     off        perMessageDeflate disabled
//     shared     server_no_context_takeover + client_no_context_takeover always
//     dedicated  ws defaults (context takeover honoured), threshold 0
'use strict';
const { WebSocketServer } = require('ws');

let mode = 'dedicated';
for (const a of process.argv.slice(2)) {
  const m = a.match(/^--deflate=(off|shared|dedicated)$/);
  if (m) mode = m[1];
}
let perMessageDeflate = false;
if (mode === 'shared') {
  perMessageDeflate = { threshold: 0, serverNoContextTakeover: true, clientNoContextTakeover: true };
} else if (mode === 'dedicated') {
  perMessageDeflate = { threshold: 0 };
}

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: 16 * 1024 * 1024, perMessageDeflate });
wss.on('listening', () => {
  process.stderr.write(`listening on ws://127.0.0.1:${wss.address().port}, script node-ws-echo (deflate ${mode})\n`);
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
process.on('SIGTERM', () => process.exit(0));
