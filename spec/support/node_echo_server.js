// node_echo_server.js — a reference echo server on the `ws` library, with
// the semantics of scripts/echo.lua: greets "I will echo your messages",
// echoes text and binary in kind, closes with 1000 on "exit".
// It prints the same startup line as luaws so spec/support/server.lua can
// drive it; the specs use it to validate wsclient.lua and as an oracle.
//   node node_echo_server.js [--max-message BYTES]
'use strict';
const { WebSocketServer } = require('ws');

let maxPayload = 16 * 1024 * 1024;
const i = process.argv.indexOf('--max-message');
if (i > 0) maxPayload = parseInt(process.argv[i + 1], 10);

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload });
let nextId = 1;
wss.on('listening', () => {
  process.stderr.write(`listening on ws://127.0.0.1:${wss.address().port}, script node-echo\n`);
});
wss.on('connection', (ws) => {
  const id = nextId++;
  process.stderr.write(`conn ${id} open\n`);
  ws.send('I will echo your messages');
  ws.on('message', (data, isBinary) => {
    if (!isBinary && data.toString() === 'exit') ws.close(1000);
    else ws.send(data, { binary: isBinary });
  });
  ws.on('error', (err) => process.stderr.write(`conn ${id} error ${err.message}\n`));
  ws.on('close', (code) => process.stderr.write(`conn ${id} closed ${code}\n`));
});
process.on('SIGTERM', () => process.exit(0));
