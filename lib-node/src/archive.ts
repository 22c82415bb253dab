/**
 * The rules that keep a tarball's entries inside an extraction root: a port of
 * lib-client/src/archive.rs, so that both clients refuse exactly the same names.
 */

/** Refuses anything that could land outside an extraction root on any platform. */
export function checkEntryPath(path: string): string | undefined {
  if (path === '') return 'empty entry name';
  if (path.includes('\\')) return 'backslashes are not allowed in entry names';
  if (path.startsWith('/')) return 'absolute paths are not allowed';
  if (/^[A-Za-z]:/.test(path)) return 'Windows drive paths are not allowed';
  if (path.split('/').includes('..')) return '`..` is not allowed in entry names';
  // Rust's `char::is_control`: the C0 and C1 control characters and DEL.
  if (/[\u0000-\u001f\u007f-\u009f]/.test(path)) return 'control characters are not allowed in entry names';
  return undefined;
}

/**
 * A symlink must be relative and resolve, from its own directory, inside the top-level
 * directory it lives in (e.g. `package/node_modules/.bin/x -> ../x/cli.js`), with every `..`
 * before the first named component (`../../a/b`, never `d/l/../../x`).
 */
export function checkSymlink(path: string, target: string): string | undefined {
  if (target === '') return 'symlink with an empty target';
  if (target.startsWith('/') || target.includes('\\') || Buffer.from(target)[1] === 0x3a /* ':' */) {
    return `symlink to \`${truncate(target, 200)}\` is not relative`;
  }
  const resolved = path.split('/').filter((c) => c !== '' && c !== '.');
  resolved.pop();
  const floor = resolved.length > 0 ? 1 : 0;
  // Only leading `..`s: a text check cannot know that a named directory is itself a symlink
  // (`package/d/l -> ..`, then `package/e -> d/l/d/l/../../etc/passwd` climbs out).
  let descended = false;
  for (const component of target.split('/')) {
    if (component === '' || component === '.') continue;
    if (component === '..') {
      if (descended) return `symlink to \`${truncate(target, 200)}\` climbs (\`..\`) after naming a directory`;
      if (resolved.length <= floor) return `symlink to \`${truncate(target, 200)}\` escapes the package`;
      resolved.pop();
    } else {
      descended = true;
      resolved.push(component);
    }
  }
  return undefined;
}

/** The path an extractor writes an entry to: empty and `.` components dropped. */
export function normalisePath(path: string): string {
  return path
    .split('/')
    .filter((c) => c !== '' && c !== '.')
    .join('/');
}

/**
 * Two names that would land on the same file are duplicates: compare them after path
 * normalisation, Unicode NFC and case folding (macOS, Windows).
 */
export function normaliseForDuplicates(path: string): string {
  return normalisePath(path).normalize('NFC').toLowerCase();
}

/** At most `max` characters of `text`, for messages about hostile input. */
export function truncate(text: string, max: number): string {
  return Array.from(text).slice(0, max).join('');
}
