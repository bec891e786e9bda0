// TLS client side of spec/tls_spec.lua with node's `ws` (Debian node-ws):
//   NODE_PATH=/usr/share/nodejs node tls_node_client.js URI [CAFILE|-] [SERVERNAME]
// Session against an echo.lua-like script over wss, permessage-deflate
// offered (ws' default): greeting, text, binary, 1 MiB binary, 1 MiB text,
// "exit". CAFILE "-" means no CA: the system's store only, so verification
// of our test certificate must fail. Prints one JSON object.
'use strict';
const fs = require('fs');
const WebSocket = require('ws');

const [uri, caFile, servername] = process.argv.slice(2);
const opts = { perMessageDeflate: true, maxPayload: 0 };
if (caFile && caFile !== '-') opts.ca = fs.readFileSync(caFile);
if (servername) opts.servername = servername;

const out = { library: 'ws' };
let step = 0;
const guard = setTimeout(() => { out.error = 'timeout at step ' + step; finish(); }, 20000);
function finish() { clearTimeout(guard); console.log(JSON.stringify(out)); process.exit(0); }

const data = Buffer.alloc(76800);
for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
const big = Buffer.alloc(1 << 20);
let x = 12345;
for (let i = 0; i < big.length; i++) {
  if (i < big.length / 2) { x = (x * 1103515245 + 12345) & 0x7fffffff; big[i] = (x >> 16) & 0xff; } else big[i] = i & 0xff;
}
const bigText = 'łó'.repeat(1 << 18);   // 1 MiB of 2-byte UTF-8

const ws = new WebSocket(uri, opts);
ws.on('upgrade', (res) => { out.extensions = res.headers['sec-websocket-extensions'] || null; });
ws.on('open', () => {
  const sock = ws._socket;
  out.tls_version = sock.getProtocol();
  out.alpn = sock.alpnProtocol || null;
  const cert = sock.getPeerCertificate();
  out.serial = cert && cert.serialNumber;
  out.cn = cert && cert.subject && cert.subject.CN;
  out.negotiated = ws.extensions || null;   // the accepted Sec-WebSocket-Extensions
});
ws.on('error', (e) => { out.error = String(e); out.code = e.code || null; finish(); });
ws.on('message', (msg, isBinary) => {
  switch (step) {
    case 0: out.greeting = msg.toString(); step++; ws.send('hello from node over TLS ✓'); break;
    case 1: out.text = msg.toString(); out.text_binary = isBinary; step++; ws.send(data); break;
    case 2: out.binary_ok = isBinary && Buffer.compare(msg, data) === 0; step++; ws.send(big); break;
    case 3: out.big_binary_len = msg.length; out.big_binary_ok = isBinary && Buffer.compare(msg, big) === 0;
      step++; ws.send(bigText); break;
    case 4: out.big_text_len = msg.length; out.big_text_ok = !isBinary && msg.toString() === bigText;
      step++; ws.send('exit'); break;
    default: out.unexpected = msg.toString();
  }
});
ws.on('close', (code) => { out.close_code = code; finish(); });
