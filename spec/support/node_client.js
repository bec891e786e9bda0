// An independent client (the `ws` library) for the interop spec.
// Talks to a server with scripts/echo.lua semantics and prints one JSON
// object with what it saw.   node node_client.js ws://127.0.0.1:PORT/path
'use strict';
const WebSocket = require('ws');

const out = { library: 'ws' };
const ws = new WebSocket(process.argv[2], { perMessageDeflate: false });
const data = Buffer.alloc(70000);
for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
const big = 'ł'.repeat(40000);
let step = 0;
const guard = setTimeout(() => { out.error = 'timeout at step ' + step; finish(); }, 20000);
function finish() { clearTimeout(guard); console.log(JSON.stringify(out)); process.exit(0); }

ws.on('error', (e) => { out.error = String(e); finish(); });
ws.on('pong', (d) => {
  out.pong = d.toString();
  step++; ws.send('exit');
});
ws.on('message', (msg, isBinary) => {
  switch (step) {
    case 0: out.greeting = msg.toString(); out.greeting_binary = isBinary;
      step++; ws.send('hello from node ✓'); break;
    case 1: out.text = msg.toString(); out.text_binary = isBinary;
      step++; ws.send(data); break;
    case 2: out.binary_is_binary = isBinary; out.binary_ok = Buffer.compare(msg, data) === 0;
      out.binary_len = msg.length; step++; ws.send(big); break;
    case 3: out.big_text_ok = msg.toString() === big && !isBinary;
      step++; ws.send('frag', { fin: false }); ws.send('mented', { fin: true }); break;
    case 4: out.fragmented = msg.toString();
      step++; ws.ping('node-ping'); break;
    default: out.unexpected = msg.toString();
  }
});
ws.on('close', (code, reason) => {
  out.close_code = code; out.close_reason = reason.toString();
  finish();
});
