// Independent client (node ws) for the deflate interop spec: negotiates
// permessage-deflate and round-trips text and binary messages of 0 B to
// 16 MiB. Prints one JSON object.
const WebSocket = require('ws');
const crypto = require('crypto');
const SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20];
const ws = new WebSocket(process.argv[2], { perMessageDeflate: true, maxPayload: 0 });
const out = { ok: [], bad: [] };
const queue = [];
for (const n of SIZES) {
  queue.push(['text ' + n, 'luaws '.repeat(Math.ceil(n / 6) + 1).slice(0, n)]);
  const b = Buffer.alloc(n);
  crypto.randomFillSync(b, 0, Math.floor(n / 2));
  queue.push(['binary ' + n, b]);
}
let current;
function next() {
  current = queue.shift();
  if (!current) { ws.close(1000); return; }
  ws.send(current[1], { binary: typeof current[1] !== 'string' });
}
ws.on('upgrade', (res) => { out.extensions = res.headers['sec-websocket-extensions'] || null; });
ws.on('open', next);
ws.on('message', (data, isBinary) => {
  const want = current[1];
  const same = typeof want === 'string' ? (!isBinary && data.toString() === want) : (isBinary && Buffer.compare(data, want) === 0);
  (same ? out.ok : out.bad).push(current[0]);
  next();
});
ws.on('close', (code) => { out.close = code; console.log(JSON.stringify(out)); });
ws.on('error', (e) => { out.error = String(e); console.log(JSON.stringify(out)); process.exit(1); });
