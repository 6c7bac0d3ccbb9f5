// A model API that counts the way Amazon Bedrock documents its quotas: requests and tokens per window, per account and
// Region. When a request starts it reserves its input plus max_tokens against the token quota (and one request);
// when it completes, the unused part of the reservation is released. A request that would take either count above
// its quota in the sliding window is rejected with a ThrottlingException, and counts nothing.
import { sleep } from './timing';

export interface ModelApiQuota {
  /** Requests per window. */
  readonly requests: number;
  /** Tokens per window. */
  readonly tokens: number;
  /** The sliding window, ms (Bedrock: 60,000). */
  readonly windowMs: number;
}

export interface ModelRequest {
  /** Input plus max_tokens: what the provider reserves when the request starts. */
  readonly estimate: number;
  /** What the request really uses (input plus output), at most the estimate. */
  readonly actual: number;
  /** How long the call takes, ms. */
  readonly latencyMs: number;
}

interface Use { readonly at: number; tokens: number }

export class ModelApiStub {
  readonly requests: Use[] = [];
  readonly tokens: Use[] = [];
  rejected = 0;
  served = 0;
  /** The highest request and token counts any window held, checked at each start. */
  readonly peak = { requests: 0, tokens: 0 };

  constructor(readonly quota: ModelApiQuota, private readonly now: () => number = Date.now) {}

  /** One call: reserve, wait, settle; throws a `ThrottlingException` (as the SDK names it) when over a quota. */
  async invoke(req: ModelRequest): Promise<{ usage: { totalTokens: number } }> {
    const at = this.now();
    const inWindow = (uses: Use[]) => uses.filter((u) => u.at > at - this.quota.windowMs).reduce((n, u) => n + u.tokens, 0);
    const requests = inWindow(this.requests) + 1;
    const tokens = inWindow(this.tokens) + req.estimate;
    if (requests > this.quota.requests || tokens > this.quota.tokens) {
      this.rejected++;
      throw Object.assign(new Error(`Too many ${requests > this.quota.requests ? 'requests' : 'tokens'}, please wait before trying again.`), { name: 'ThrottlingException' });
    }
    this.peak.requests = Math.max(this.peak.requests, requests);
    this.peak.tokens = Math.max(this.peak.tokens, tokens);
    this.requests.push({ at, tokens: 1 });
    const reservation: Use = { at, tokens: req.estimate };
    this.tokens.push(reservation);
    await sleep(req.latencyMs);
    // completed: the unused part of the reservation is released (it still counts at the request's start)
    reservation.tokens = Math.min(req.estimate, req.actual);
    this.served++;
    return { usage: { totalTokens: reservation.tokens } };
  }

  /** Tokens used (after release) over [from, to] ÷ what the quota allows over that span. */
  tokenUtilization(fromMs: number, toMs: number): number {
    const used = this.tokens.filter((u) => u.at >= fromMs && u.at <= toMs).reduce((n, u) => n + u.tokens, 0);
    return used / (this.quota.tokens * ((toMs - fromMs) / this.quota.windowMs));
  }

  /** Requests over [from, to] ÷ what the quota allows over that span. */
  requestUtilization(fromMs: number, toMs: number): number {
    const used = this.requests.filter((u) => u.at >= fromMs && u.at <= toMs).length;
    return used / (this.quota.requests * ((toMs - fromMs) / this.quota.windowMs));
  }
}

/**
 * Token counts of a chat workload: log-normal actual use (mean about `mean`, a long tail), and the estimate a caller
 * gives up front: the input plus the max_tokens it asks for (what the provider reserves), not the mean.
 */
export function modelWorkload(n: number, options: { mean: number; maxTokens: number; seed?: number }): ModelRequest[] {
  let s = (options.seed ?? 7) % 2147483647;
  const random = () => {
    s = (s * 48271) % 2147483647;
    return s / 2147483647;
  };
  // log-normal with sigma 0.9: mean = exp(mu + sigma² / 2)
  const sigma = 0.9;
  const mu = Math.log(options.mean) - (sigma * sigma) / 2;
  return Array.from({ length: n }, () => {
    const z = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
    const total = Math.max(10, Math.round(Math.exp(mu + sigma * z)));
    const input = Math.max(1, Math.round(total * 0.3));
    const output = Math.min(options.maxTokens, total - input);
    return { estimate: input + options.maxTokens, actual: input + output, latencyMs: 20 + Math.round(random() * 80) };
  });
}
