// `npm pack` yields a tarball a host can install (prepack builds it) with its types.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { tempDir } from './support.mjs';

const PACKAGE = fileURLToPath(new URL('..', import.meta.url));
const npm = (args, cwd) => execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8' });

test('npm pack yields an installable package with types and no runtime dependencies', async (t) => {
  const out = tempDir(t);
  const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', out], PACKAGE));
  const files = packed.files.map((f) => f.path);
  assert.ok(files.includes('dist/index.js') && files.includes('dist/index.d.ts') && files.includes('README.md'), files.join(' '));
  assert.ok(!files.some((f) => f.startsWith('src/') || f.startsWith('test/')), 'only what a host needs');

  const host = tempDir(t);
  writeFileSync(join(host, 'package.json'), JSON.stringify({ name: 'host', private: true, type: 'module' }));
  npm(['install', '--offline', join(out, packed.filename)], host);
  assert.ok(existsSync(join(host, 'node_modules/reliquary-client/dist/index.d.ts')));
  const exported = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', "import * as r from 'reliquary-client'; console.log(Object.keys(r).sort().join(','))"],
    { cwd: host, encoding: 'utf8' },
  );
  for (const name of ['ensureArtefact', 'currentArch', 'RegistryError', 'RegistryClient']) {
    assert.ok(exported.split(',').map((s) => s.trim()).includes(name), `${name} in ${exported}`);
  }
});
