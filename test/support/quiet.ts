/** Runs `fn` with stdout silenced: the acquire and dispatcher handlers log one EMF line per call. */
export async function quiet<T>(fn: () => Promise<T>): Promise<T> {
  const out = process.stdout.write;
  process.stdout.write = (() => true) as any;
  try {
    return await fn();
  } finally {
    process.stdout.write = out;
  }
}
