/**
 * A pause after a lost race or a transient error: full jitter, uniform in [0, min(capMs, baseMs × 2^attempt)), so a
 * herd of retries on one item or one API spreads out.
 */
export function jitteredPause(attempt: number, capMs: number, baseMs = 5): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.random() * Math.min(capMs, baseMs * 2 ** attempt)));
}
