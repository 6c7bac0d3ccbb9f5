/**
 * A synth-time validation error as every construct of the library throws it: the message carries the construct
 * path first (`[Stack/Limiter] ratePerSecond must be ...`), then what was wrong. Fails when `make` does not throw,
 * throws another message, or throws without the path.
 */
export function expectValidationError(make: () => unknown, message: RegExp): void {
  let thrown: unknown;
  try {
    make();
  } catch (err) {
    thrown = err;
  }
  if (thrown === undefined) throw new Error(`expected a validation error matching ${message}, but nothing was thrown`);
  const text = (thrown as Error).message;
  expect(text).toMatch(message);
  expect(text).toMatch(/^\[[^\]\s]+(\/[^\]]+)*\] \S/);
}
