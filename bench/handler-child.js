// Loads a bundled acquire handler in a fresh process, like a Lambda container: reports module load time,
// then (with CALLS set) serves that many acquires one at a time and reports the peak RSS.
const t0 = process.hrtime.bigint();
const { handler } = require(process.argv[2]);
const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
(async () => {
  const calls = Number(process.env.CALLS ?? 0);
  let peakRss = process.memoryUsage().rss;
  const sample = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss); }, 5);
  const realWrite = process.stdout.write.bind(process.stdout);
  process.stdout.write = () => true; // EMF lines
  let admitted = 0;
  for (let i = 0; i < calls; i++) {
    try {
      await handler({ key: `k${i % 50}`, mode: 'TRY' });
      admitted++;
    } catch (err) {
      if (err.name !== 'RateLimitExceeded') throw err;
    }
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }
  clearInterval(sample);
  process.stdout.write = realWrite;
  console.log(JSON.stringify({ loadMs, peakRssMb: peakRss / 2 ** 20, admitted }));
})().catch((err) => { console.error(err); process.exit(1); });
