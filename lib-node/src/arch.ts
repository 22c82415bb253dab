/**
 * The registry's name for the architecture this program runs on. Slots are named after Node's
 * `process.arch` (`x64`, `arm64`, ...), so it is exactly that; the Rust client maps its own
 * names onto these.
 */
export function currentArch(): string {
  return process.arch;
}
