// The Node client's part of scripts/bench (run by benches/parts/node_client.rs, which starts the
// registry and uploads small@1 and big@1): warm ensureArtefact latency, and a cold 64 MiB
// ensure against `curl | tar xz` of the same tarball. Prints `ROW\t...` lines for the report.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ensureArtefact } from '../dist/index.js';

const registry = process.argv[2];
const runs = Number(process.env.RELIQUARY_BENCH_RUNS ?? 3);
const temp = () => mkdtempSync(join(tmpdir(), 'reliquary-node-bench-'));
const percentile = (samples, p) => [...samples].sort((a, b) => a - b)[Math.round((samples.length - 1) * p)];
const median = (samples) => percentile(samples, 0.5);
const row = (...cells) => console.log(['ROW', ...cells].join('\t'));

const warmCache = temp();
await ensureArtefact({ registry, id: 'small@1', architecture: 'x64', cacheDir: warmCache });
const warm = [];
for (let i = 0; i < 300; i++) {
  const started = performance.now();
  const ensured = await ensureArtefact({ registry, id: 'small@1', architecture: 'x64', cacheDir: warmCache });
  warm.push(performance.now() - started);
  if (ensured.downloaded) throw new Error('a warm ensure downloaded');
}
rmSync(warmCache, { recursive: true });
row(
  'Client (Node)',
  'ensureArtefact, nothing changed (incl. the 304 round trip)',
  `p50 ${median(warm).toFixed(2)} ms, p99 ${percentile(warm, 0.99).toFixed(2)} ms`,
  '-',
  '-',
  'p50 <= 5 ms',
);

const ours = [];
const theirs = [];
for (let run = 0; run < runs; run++) {
  const cacheDir = temp();
  let started = performance.now();
  const ensured = await ensureArtefact({ registry, id: 'big@1', architecture: 'x64', cacheDir });
  ours.push((performance.now() - started) / 1000);
  if (!ensured.downloaded) throw new Error('a cold ensure did not download');
  rmSync(cacheDir, { recursive: true });

  const target = temp();
  started = performance.now();
  execFileSync('sh', ['-c', `curl -sSf '${registry}/artefacts/big@1/tarball?architecture=x64' | tar xz -C '${target}'`]);
  theirs.push((performance.now() - started) / 1000);
  rmSync(target, { recursive: true });
}
row(
  'Client (Node)',
  'cold ensureArtefact of a 64 MiB tarball (verify + safe extract)',
  `${median(ours).toFixed(2)} s`,
  `curl \\| tar xz: ${median(theirs).toFixed(2)} s`,
  (median(ours) / median(theirs)).toFixed(2),
  '<= 1.2',
);
