// Test support: a real `reliquary serve` (the workspace's binary), hand-made tarballs, a fake
// registry that signs with a test key, and a tampering proxy.
import { spawn } from 'node:child_process';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

import { canonicalize } from '../dist/index.js';

const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(HERE, '..', '..');
export const BIN = process.env.RELIQUARY_BIN ?? join(ROOT, 'target', 'debug', 'reliquary');
export const ADMIN_TOKEN = 'node-test-admin-token-0123456789abcdefgh';
export const HOSTILE = join(ROOT, 'lib-client', 'tests', 'fixtures', 'hostile');

// No silent skips: without the binary the suite fails, saying how to build it.
if (!existsSync(BIN)) {
  throw new Error(`${BIN} is missing: build it with \`cargo build --bin reliquary\` (scripts/test does)`);
}

export function tempDir(t, prefix = 'reliquary-node-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Starts `reliquary serve` on a fresh data dir; stopped when the test ends. */
export async function startServer(t, { port, dataDir, args = [] } = {}) {
  port ??= await freePort();
  dataDir ??= tempDir(t, 'reliquary-data-');
  const child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...args], {
    env: { ...process.env, RELIQUARY_ADMIN_TOKEN: ADMIN_TOKEN, RELIQUARY_LOG: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => (log += d));
  const url = `http://127.0.0.1:${port}`;
  const server = {
    url,
    port,
    dataDir,
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
  t.after(() => server.stop());
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) return server;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`reliquary serve did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function admin(server, method, path, body, headers = {}) {
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...headers },
    body,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

export function upload(server, id, architecture, bytes) {
  return admin(server, 'POST', `/artefacts/npm/${id.replaceAll('/', '%2F')}?architecture=${architecture}`, bytes, {
    'content-type': 'application/gzip',
  });
}

/** How many requests the server answered for `route` with `status` (from /metrics). */
export async function served(server, route, status) {
  const text = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('reliquary_http_requests_total{') && line.includes(`route="${route}"`) && line.includes(`status="${status}"`)) {
      total += Number(line.split(' ').pop());
    }
  }
  return total;
}
export const TARBALL_ROUTE = '/artefacts/{id}/tarball';
export const DOC_ROUTE = '/artefacts/{id}';

/** A gzip tar from entries, names written raw (as lib-client's test support does). */
export function tarball(entries) {
  const blocks = [];
  for (const { name, data = Buffer.alloc(0), type = '0', mode = 0o644, link = '' } of entries) {
    const header = Buffer.alloc(512);
    header.write(name, 0, 'utf8');
    header.write(`${mode.toString(8).padStart(7, '0')}\0`, 100, 'latin1');
    header.write('0000000\0', 108, 'latin1');
    header.write('0000000\0', 116, 'latin1');
    header.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
    header.write(`${(1_700_000_000).toString(8).padStart(11, '0')}\0`, 136, 'latin1');
    header.write(type, 156, 'latin1');
    header.write(link, 157, 'utf8');
    header.write('ustar  \0', 257, 'latin1');
    header.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of header) sum += b;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks), { level: 1 });
}

/** An `npm pack`-shaped tarball whose index.js holds `payload`. */
export function npmTarball(name, version, payload = 'module.exports = 1;\n') {
  const manifest = JSON.stringify({ name, version, license: 'MIT', description: `${name} for tests` });
  return tarball([
    { name: 'package/package.json', data: Buffer.from(manifest) },
    { name: 'package/index.js', data: Buffer.from(payload) },
  ]);
}

export const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** An Ed25519 key that signs slots exactly as the registry does. */
export function signingKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const x = publicKey.export({ format: 'jwk' }).x;
  const kid = createHash('sha256').update(Buffer.from(x, 'base64url')).digest().subarray(0, 16).toString('base64url');
  const jwk = { kty: 'OKP', crv: 'Ed25519', x, kid, use: 'sig' };
  return {
    jwk,
    sign(payload, header = { alg: 'EdDSA', kid }) {
      const input = `${Buffer.from(canonicalize(header)).toString('base64url')}.${Buffer.from(canonicalize(payload)).toString('base64url')}`;
      return `${input}.${sign(null, Buffer.from(input), privateKey).toString('base64url')}`;
    },
  };
}

/**
 * A registry of one artefact, served from memory and signed with `key`: for tarballs the real
 * registry refuses to store (hostile ones). `tarballs` maps slot names to bytes.
 */
export async function fakeRegistry(t, { id, tarballs, key, dataUpdatedAt = '2026-01-01T00:00:00.000Z' }) {
  const now = '2026-01-01T00:00:00.000Z';
  const slots = {};
  for (const [architecture, bytes] of Object.entries(tarballs)) {
    const payload = {
      architecture, id, kind: 'release', packageName: 'fake', registry: 'fake',
      sha256: sha256(bytes), signedAt: now, size: bytes.length, version: '1.0.0',
    };
    slots[architecture] = { sha256: payload.sha256, size: bytes.length, version: '1.0.0', uploadedAt: now, signature: key.sign(payload) };
  }
  const doc = {
    id, kind: 'release', packageName: 'fake', version: '1.0.0', licence: null, description: null, category: null,
    tarballs: slots, origin: null, deprecated: null, createdAt: now, updatedAt: now, dataUpdatedAt, revision: 1, seq: 1,
  };
  const requests = [];
  const server = createServer((request, response) => {
    requests.push(request.url);
    const url = new URL(request.url, 'http://x');
    if (url.pathname === `/artefacts/${id.replaceAll('/', '%2F')}`) {
      response.writeHead(200, { 'content-type': 'application/json', etag: '"1"' });
      response.end(JSON.stringify(doc));
    } else if (url.pathname.endsWith('/tarball')) {
      const bytes = tarballs[url.searchParams.get('architecture')];
      response.writeHead(bytes ? 200 : 404);
      response.end(bytes ?? '{"code":"not_found","message":"no slot"}');
    } else {
      response.writeHead(404);
      response.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return { url: `http://127.0.0.1:${server.address().port}`, doc, requests };
}

/**
 * A proxy in front of `target` whose `rewrite(path, status, headers, body)` may change any
 * answer; requests and their headers are recorded.
 */
export async function proxy(t, target, rewrite = (answer) => answer) {
  const seen = [];
  const server = createServer(async (request, response) => {
    seen.push({ url: request.url, headers: request.headers });
    const headers = { ...request.headers };
    delete headers.host;
    const upstream = await fetch(`${target}${request.url}`, { headers, redirect: 'manual' });
    const answer = rewrite({
      path: request.url,
      status: upstream.status,
      headers: Object.fromEntries([...upstream.headers].filter(([k]) => !['content-length', 'transfer-encoding', 'connection'].includes(k))),
      body: Buffer.from(await upstream.arrayBuffer()),
    });
    response.writeHead(answer.status, answer.headers);
    response.end(answer.body);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => { server.closeAllConnections?.(); server.close(resolve); }));
  return { url: `http://127.0.0.1:${server.address().port}`, seen };
}

/** Runs `reliquary ensure --json` and returns its parsed output (or throws with stderr). */
export function cliEnsure(args) {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.RELIQUARY_TOKEN;
    delete env.RELIQUARY_URL;
    const child = spawn(BIN, ['ensure', '--json', ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`reliquary ensure failed (${code}): ${err}`))));
  });
}
