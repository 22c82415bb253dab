// The cache-entry lock (the protocol of lib-client/src/lock.rs): turns within one process,
// stale locks broken (by age, or a dead holder here), a live holder kept by its heartbeat,
// a waiter that times out with `cache`, and a lock left by the Rust client's protocol.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { EntryLock } from '../dist/lock.js';
import { tempDir } from './support.mjs';

const quick = { staleAfterMs: 400, heartbeatMs: 50, waitMs: 20_000 };
const elsewhere = { pid: 1, host: 'another-host', pidNamespace: '', acquiredAt: '2026-01-01T00:00:00.000Z', nonce: 'x' };

function writeLock(dir, holder, ageMs) {
  const path = join(dir, '.lock');
  writeFileSync(path, JSON.stringify(holder));
  const when = new Date(Date.now() - ageMs);
  utimesSync(path, when, when);
}

test('holders take turns, and the lock file goes with the last', async (t) => {
  const dir = tempDir(t);
  let inside = 0;
  let turns = 0;
  await Promise.all(
    Array.from({ length: 6 }, async () => {
      for (let i = 0; i < 5; i++) {
        const lock = await EntryLock.acquire(dir, quick);
        assert.equal(inside++, 0, 'two holders');
        await sleep(2);
        inside--;
        turns++;
        await lock.release();
      }
    }),
  );
  assert.equal(turns, 30);
  assert.deepEqual(readdirSync(dir), []);
});

test('a lock not touched for staleAfter is broken; so is an empty one (v1.0) by its age', async (t) => {
  for (const content of [elsewhere, '']) {
    const dir = tempDir(t);
    if (content === '') {
      writeFileSync(join(dir, '.lock'), '');
      const old = new Date(Date.now() - 60_000);
      utimesSync(join(dir, '.lock'), old, old);
    } else {
      writeLock(dir, content, 5000);
    }
    const started = Date.now();
    const lock = await EntryLock.acquire(dir, quick);
    assert.ok(Date.now() - started < 300);
    assert.equal(JSON.parse(readFileSync(join(dir, '.lock'), 'utf8')).pid, process.pid);
    await lock.release();
  }
});

test('a dead holder on this host is broken at once, whichever client wrote it', async (t) => {
  const dir = tempDir(t);
  const { readlinkSync } = await import('node:fs');
  let namespace = '';
  try {
    namespace = readlinkSync('/proc/self/ns/pid');
  } catch {}
  // As lib-client writes it (same fields); 4194305 is above Linux's largest pid_max.
  writeLock(dir, { pid: 4194305, host: hostname(), pidNamespace: namespace, acquiredAt: new Date().toISOString(), nonce: 'r' }, 0);
  const started = Date.now();
  const lock = await EntryLock.acquire(dir, quick);
  assert.ok(Date.now() - started < 300);
  await lock.release();
});

test('a fresh lock elsewhere is waited for until the timeout: cache error naming the holder', async (t) => {
  const dir = tempDir(t);
  writeLock(dir, elsewhere, 0);
  await assert.rejects(EntryLock.acquire(dir, { ...quick, staleAfterMs: 60_000, waitMs: 300 }), (e) => {
    assert.equal(e.code, 'cache');
    assert.match(e.message, /pid 1 on another-host/);
    return true;
  });
  assert.ok(existsSync(join(dir, '.lock')), 'a live lock is left alone');
});

test("the heartbeat keeps a long holder's lock", async (t) => {
  const dir = tempDir(t);
  const holder = await EntryLock.acquire(dir, quick);
  const started = Date.now();
  let acquiredAt = 0;
  const waiter = EntryLock.acquire(dir, quick).then((lock) => {
    acquiredAt = Date.now();
    return lock.release();
  });
  await sleep(1200); // three times staleAfter: without the heartbeat the waiter would break it
  const releasedAt = Date.now();
  await holder.release();
  await waiter;
  assert.ok(acquiredAt >= releasedAt, 'the waiter broke a live lock');
  assert.ok(acquiredAt - started >= 1200);
});

test('a holder whose lock was taken over knows it, and leaves the new one', async (t) => {
  const dir = tempDir(t);
  const lock = await EntryLock.acquire(dir, quick);
  await lock.assertHeld();
  // Judged stale (a starved heartbeat), broken and taken by another holder.
  writeFileSync(join(dir, '.lock'), JSON.stringify(elsewhere));
  await assert.rejects(lock.assertHeld(), /taken over/);
  await lock.release();
  assert.deepEqual(JSON.parse(readFileSync(join(dir, '.lock'), 'utf8')), elsewhere, "the new holder's lock stays");
});
