// browser.js — drives headless Debian chromium through the DevTools protocol
// (over --remote-debugging-pipe: no port, no npm packages) and runs the
// console page scenario of spec/console_spec.lua.
//
//   node spec/support/browser.js http://127.0.0.1:PORT/ [chromium binary]
//
// Prints one JSON object on its last line:
//   {"skip": "why"}                      chromium could not start
//   {"ok": true, "steps": [...], ...}    every step passed
//   {"ok": false, "error": "...", "steps": [...], "log": [...]}
// LUAWS_BROWSER_SCREENSHOT=page.png saves a screenshot of the page at the end.
// Every wait is for a DOM condition (a MutationObserver in the page), each
// with a guard timeout that is reported as a failure, never a fixed sleep.
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const PAGE_URL = process.argv[2];
const CHROMIUM = process.argv[3] || process.env.CHROMIUM || '/usr/bin/chromium';
const GUARD_MS = Number(process.env.LUAWS_BROWSER_TIMEOUT_MS || 15000);

const out = { steps: [], console: [], exceptions: [] };
let browser = null;
let cdpClient = null;
let profile = null;
let finished = false;
let closing = false;

function finish(result) {
  if (finished) return;
  finished = true;
  Object.assign(out, result);
  const done = () => {
    if (profile) { try { fs.rmSync(profile, { recursive: true, force: true }); } catch (e) { /* ignore */ } }
    console.log(JSON.stringify(out));
    process.exit(0);
  };
  if (browser && browser.exitCode === null && browser.signalCode === null) {
    // Ask politely (Browser.close), then make sure.
    closing = true;
    browser.once('exit', done);
    const kill = setTimeout(() => browser.kill('SIGKILL'), 3000);
    browser.once('exit', () => clearTimeout(kill));
    if (cdpClient) cdpClient.send('Browser.close').catch(() => browser.kill('SIGKILL'));
    else browser.kill('SIGKILL');
  } else {
    done();
  }
}

// ---------------------------------------------------------------------------
// DevTools protocol over the pipe: fd 3 carries commands, fd 4 replies and
// events, each message a JSON text followed by a NUL byte.
// ---------------------------------------------------------------------------
class CDP {
  constructor(input, output) {
    this.input = input;
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = [];
    let buf = Buffer.alloc(0);
    output.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      let nul;
      while ((nul = buf.indexOf(0)) >= 0) {
        const msg = JSON.parse(buf.subarray(0, nul).toString('utf8'));
        buf = buf.subarray(nul + 1);
        this.dispatch(msg);
      }
    });
    input.on('error', () => { /* the browser went away: 'close' below reports it */ });
    output.on('close', () => {
      for (const { reject } of this.pending.values()) reject(new Error('browser closed the DevTools pipe'));
      this.pending.clear();
    });
  }
  dispatch(msg) {
    if (msg.id !== undefined) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(p.method + ': ' + msg.error.message));
      else p.resolve(msg.result);
    } else {
      for (const l of this.listeners) l(msg);
    }
  }
  send(method, params, sessionId) {
    const id = this.nextId++;
    const msg = { id, method, params: params || {} };
    if (sessionId) msg.sessionId = sessionId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.input.write(JSON.stringify(msg) + '\0');
    });
  }
  on(fn) { this.listeners.push(fn); }
}

function launch() {
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'luaws-chromium-'));
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-extensions', '--disable-default-apps', '--no-default-browser-check',
    '--mute-audio', '--password-store=basic', '--use-mock-keychain', '--disable-dev-shm-usage',
    '--user-data-dir=' + profile, '--remote-debugging-pipe', 'about:blank',
  ];
  return new Promise((resolve) => {
    let stderr = '';
    try {
      browser = spawn(CHROMIUM, args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
    } catch (e) {
      resolve({ error: String(e) });
      return;
    }
    browser.stderr.on('data', (d) => { stderr += d; if (stderr.length > 20000) stderr = stderr.slice(-20000); });
    browser.on('error', (e) => resolve({ error: String(e) }));
    browser.on('exit', (code, sig) => {
      if (closing) return;
      out.browser_exit = { code, signal: sig, stderr: stderr.slice(-4000) };
      resolve({ error: 'chromium exited (' + (sig || code) + '): ' + stderr.slice(-2000) });
    });
    const cdp = new CDP(browser.stdio[3], browser.stdio[4]);
    cdpClient = cdp;
    // The browser is up once it answers a command.
    cdp.send('Browser.getVersion').then((v) => resolve({ cdp, version: v }),
                                       (e) => resolve({ error: String(e) + ': ' + stderr.slice(-2000) }));
  });
}

// ---------------------------------------------------------------------------
// The scenario.
// ---------------------------------------------------------------------------
async function main() {
  if (!PAGE_URL) throw new Error('usage: node browser.js PAGE_URL [CHROMIUM]');
  const started = await Promise.race([
    launch(),
    new Promise((resolve) => setTimeout(() => resolve({ error: 'chromium did not answer within ' + GUARD_MS + ' ms' }), GUARD_MS)),
  ]);
  if (started.error) return finish({ skip: 'chromium cannot start: ' + started.error });
  const { cdp } = started;
  out.browser = started.version.product;

  const { targetId } = await cdp.send('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await cdp.send('Target.attachToTarget', { targetId, flatten: true });
  const page = (method, params) => cdp.send(method, params, sessionId);
  cdp.on((msg) => {
    if (msg.sessionId !== sessionId) return;
    if (msg.method === 'Runtime.consoleAPICalled') {
      out.console.push(msg.params.type + ': ' + msg.params.args.map((a) => a.value !== undefined ? a.value : a.description).join(' '));
    } else if (msg.method === 'Runtime.exceptionThrown') {
      const d = msg.params.exceptionDetails;
      out.exceptions.push((d.exception && d.exception.description) || d.text);
    }
  });
  await page('Runtime.enable');
  await page('Page.enable');

  // Runs an expression in the page; returns its value (awaiting promises).
  async function evaluate(expression) {
    const r = await page('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
    if (r.exceptionDetails) {
      const d = r.exceptionDetails;
      throw new Error((d.exception && d.exception.description) || d.text);
    }
    return r.result.value;
  }
  // Waits until the page expression `cond` is truthy, re-checking on every DOM
  // change; returns its value, or fails after the guard timeout with `what`.
  async function waitFor(what, cond) {
    const expr = `new Promise((resolve) => {
      const check = () => { try { return (${cond}); } catch (e) { return undefined; } };
      let v = check();
      if (v) return resolve({ ok: true, value: v });
      const obs = new MutationObserver(() => {
        v = check();
        if (v) { obs.disconnect(); clearTimeout(t); resolve({ ok: true, value: v }); }
      });
      obs.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
      const t = setTimeout(() => { obs.disconnect(); resolve({ ok: false }); }, ${GUARD_MS});
    })`;
    const r = await evaluate(expr);
    if (!r || !r.ok) throw new Error('timed out waiting for ' + what);
    return r.value;
  }
  async function step(name, fn) {
    try {
      const value = await fn();
      out.steps.push({ name, ok: true, value });
      return value;
    } catch (e) {
      e.step = name;
      throw e;
    }
  }
  async function click(id) {
    await evaluate(`document.getElementById(${JSON.stringify(id)}).click()`);
  }
  // Types text into an element with real key events and presses Enter.
  async function typeAndEnter(id, text) {
    await evaluate(`(() => { const e = document.getElementById(${JSON.stringify(id)}); e.focus(); e.value = ''; })()`);
    await page('Input.insertText', { text });
    const enter = { key: 'Enter', code: 'Enter', windowsVirtualKeyCode: 13, nativeVirtualKeyCode: 13 };
    await page('Input.dispatchKeyEvent', Object.assign({ type: 'rawKeyDown' }, enter));
    await page('Input.dispatchKeyEvent', Object.assign({ type: 'char', text: '\r' }, enter));
    await page('Input.dispatchKeyEvent', Object.assign({ type: 'keyUp' }, enter));
  }
  const entries = (sel) => `Array.from(document.querySelectorAll('#log li${sel}'))`;
  const count = (sel) => evaluate(`${entries(sel)}.length`);
  const bodyIs = (sel, text) =>
    `${entries(sel)}.some((li) => li.querySelector('.body').firstChild.textContent === ${JSON.stringify(text)})`;

  try {
    await step('load the page', async () => {
      const loaded = new Promise((resolve) => cdp.on((m) => {
        if (m.sessionId === sessionId && m.method === 'Page.loadEventFired') resolve();
      }));
      const nav = await page('Page.navigate', { url: PAGE_URL });
      if (nav.errorText) throw new Error('navigation failed: ' + nav.errorText);
      await loaded;
      const title = await evaluate('document.title');
      if (!(await evaluate(`!!document.getElementById('url') && !!document.getElementById('log')`))) {
        const text = await evaluate('document.body ? document.body.innerText.slice(0, 200) : ""');
        throw new Error(PAGE_URL + ' is not the console page (title "' + title + '", text "' + text + '")');
      }
      return title;
    });
    await step('the URL field defaults to the page\'s own ws:// URL', () =>
      waitFor('#url to be filled', `document.getElementById('url').value`));
    await step('the page has labelled controls', () => evaluate(`(() => {
      const missing = [];
      for (const id of ['url', 'protocols', 'message']) {
        if (!document.querySelector('label[for=' + id + ']')) missing.push(id);
      }
      if (missing.length) throw new Error('no label for ' + missing.join(', '));
      return document.querySelectorAll('label').length;
    })()`));
    await step('send is disabled before connecting', () =>
      evaluate(`document.getElementById('send').disabled && document.getElementById('message').disabled`));

    await step('connect', async () => {
      await click('connect');
      return waitFor('status open', `document.getElementById('status').dataset.state === 'open' &&
                                     document.getElementById('status').textContent`);
    });
    await step('the greeting shows in the log', () =>
      waitFor('the greeting in the log', bodyIs('.in', 'I will echo your messages')));

    await step('Enter sends a text message and its echo comes back', async () => {
      const before = await count('.in');
      await typeAndEnter('message', 'hello from chromium ✓');
      await waitFor('the sent message in the log', bodyIs('.out', 'hello from chromium ✓'));
      await waitFor('the echo in the log', `${entries('.in')}.length > ${before}`);
      return waitFor('the echo text', bodyIs('.in', 'hello from chromium ✓') &&
                     `${entries('.in')}[${before}].querySelector('time').textContent`);
    });

    await step('invalid JSON is refused before sending', async () => {
      await click('mode-json');
      const outs = await count('.out');
      await typeAndEnter('message', '{"a": 1,');
      const err = await waitFor('the JSON error', `document.getElementById('message-error').textContent`);
      if ((await count('.out')) !== outs) throw new Error('invalid JSON was sent');
      const invalid = await evaluate(`document.getElementById('message').getAttribute('aria-invalid')`);
      if (invalid !== 'true') throw new Error('message not marked aria-invalid');
      return err;
    });

    await step('valid JSON is sent and echoed', async () => {
      const ins = await count('.in');
      await typeAndEnter('message', '{"a": [1, 2, {"b": null}]}');
      await waitFor('the JSON echo', `${entries('.in')}.length > ${ins}`);
      const err = await evaluate(`document.getElementById('message-error').textContent`);
      if (err) throw new Error('error still shown: ' + err);
      return evaluate(`${entries('.in')}[${ins}].querySelector('.body').firstChild.textContent`);
    });

    await step('binary messages show as hex with their length', async () => {
      await click('mode-hex');
      const ins = await count('.in[data-type=binary]');
      await typeAndEnter('message', '00 ff 68 69');
      await waitFor('the binary echo', `${entries('.in[data-type=binary]')}.length > ${ins}`);
      return evaluate(`(() => { const li = ${entries('.in[data-type=binary]')}[${ins}];
        return { hex: li.querySelector('.body').firstChild.textContent, length: li.dataset.length }; })()`);
    });

    await step('disconnect shows close code 1000', async () => {
      await click('disconnect');
      const code = await waitFor('a close entry', `(() => { const c = ${entries('.close')}; return c.length && c[c.length - 1].dataset.code; })()`);
      await waitFor('status closed', `document.getElementById('status').dataset.state === 'closed'`);
      const text = await evaluate(`(() => { const c = ${entries('.close')}; return c[c.length - 1].querySelector('.body').textContent; })()`);
      return { code: Number(code), text };
    });

    await step('the log entries carry timestamps', () => evaluate(`${entries('')}.every((li) =>
      /^\\d\\d:\\d\\d:\\d\\d\\.\\d\\d\\d$/.test(li.querySelector('time').textContent))`));
  } catch (e) {
    let log = [];
    try { log = await evaluate(`${entries('')}.map((li) => li.dataset.kind + ' ' + li.querySelector('.body').textContent)`); } catch (e2) { /* ignore */ }
    return finish({ ok: false, error: (e.step ? e.step + ': ' : '') + e.message, log });
  }
  const log = await evaluate(`${entries('')}.map((li) => li.dataset.kind + ' ' + li.querySelector('.body').textContent)`);
  // LUAWS_BROWSER_SCREENSHOT=file.png keeps a picture of the page at the end.
  if (process.env.LUAWS_BROWSER_SCREENSHOT) {
    await page('Emulation.setDeviceMetricsOverride', { width: 1000, height: 800, deviceScaleFactor: 1, mobile: false });
    const shot = await page('Page.captureScreenshot', { format: 'png' });
    fs.writeFileSync(process.env.LUAWS_BROWSER_SCREENSHOT, Buffer.from(shot.data, 'base64'));
  }
  finish({ ok: true, log });
}

setTimeout(() => finish({ ok: false, error: 'browser.js overall guard timeout' }), GUARD_MS * 6).unref();
main().catch((e) => finish({ ok: false, error: String(e && e.stack || e) }));
