// One ensureArtefact in its own process, for the concurrency tests: prints the result as JSON.
import { ensureArtefact } from '../dist/index.js';

const [registry, id, architecture, cacheDir, token, keysJson] = process.argv.slice(2);
const trustedKeys = keysJson ? JSON.parse(keysJson) : undefined;
const ensured = await ensureArtefact({ registry, id, architecture, cacheDir, token, trustedKeys });
process.stdout.write(JSON.stringify(ensured));
