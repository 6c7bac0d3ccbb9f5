import { Duration, Validations } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import type { AdaptiveOptions } from '../i-rate-limiter';
import { Limit } from '../limit';
import { DEFAULT_PRIORITY_RESERVE, LimiterEnv } from './contract';

/** A limiter's buckets, as plain values: where they live and the limit a handler enforces on them. */
export interface LimiterBuckets {
  readonly table: dynamodb.ITable;
  readonly limiterName: string;
  readonly ratePerSecond: number;
  readonly burst: number;
  readonly shards: number;
  /** Several limits: their buckets share an item per key (`<limiterName>#multi#<key>`, written whole). */
  readonly limits?: readonly Limit[];
  /** Each key's own limits under the shared `limits`: the shared buckets and every active key's on one item. */
  readonly keyLimits?: readonly Limit[];
  /** An adaptive limit. */
  readonly adaptive?: AdaptiveOptions;
  /** Share of the burst each priority class below HIGH leaves to the ones above. */
  readonly priorityReserve?: number;
}

/** The start jitter a limit derived from a provider's window rule was derived with, ms (one limit only). */
function startJitterOf(limiter: Pick<LimiterBuckets, 'limits'>): number | undefined {
  const limits = limiter.limits ?? [];
  return limits.length === 1 ? limits[0].windowRule?.startJitter?.toMilliseconds() : undefined;
}

/** The adaptive options as the function reads them, defaults filled in (checked by the limiter). */
export function adaptiveJson(a: AdaptiveOptions, ratePerSecond: number): string {
  return JSON.stringify({
    minRatePerSecond: a.minRatePerSecond,
    decreaseFactor: a.decreaseFactor ?? DEFAULT_DECREASE_FACTOR,
    increasePerSecond: a.increasePerSecond ?? ratePerSecond / 20,
    maxReservationMs: (a.maxReservation ?? Duration.seconds(DEFAULT_MAX_RESERVATION_S)).toMilliseconds(),
  });
}

export const DEFAULT_DECREASE_FACTOR = 0.7;
export const DEFAULT_MAX_RESERVATION_S = 2;

/** Whether the handler takes through its several-limit path (one item written whole per acquire). */
function multiItem(limiter: Pick<LimiterBuckets, 'limits' | 'keyLimits'>): boolean {
  return (limiter.limits?.length ?? 1) > 1 || (limiter.keyLimits?.length ?? 0) > 0;
}

const limitsJson = (limits: readonly Limit[]) =>
  JSON.stringify(limits.map((l) => ({ dimension: l.dimension, ratePerSecond: l.ratePerSecond, burst: l.burst })));

/**
 * The role of a bundled handler: it may log only to its own log group (instead of
 * AWSLambdaBasicExecutionRole's logs on every group). The only "*" it gets later is X-Ray's, acknowledged here.
 */
export function handlerRole(scope: Construct, id: string, logGroup: logs.ILogGroup, description: string): iam.Role {
  const role = new iam.Role(scope, id, {
    assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    description,
  });
  role.addToPrincipalPolicy(new iam.PolicyStatement({
    actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
    resources: [logGroup.logGroupArn],
  }));
  Validations.of(role).acknowledge({
    id: 'AwsSolutions-IAM5[Resource::*]',
    reason: 'only xray:PutTraceSegments and xray:PutTelemetryRecords (added by Tracing.ACTIVE) use "*": they support no resource-level permissions',
  });
  return role;
}

/**
 * The environment a handler reads to take tokens from a limiter's buckets (`configFromEnv` in
 * lambda/rate-limiter/limiter.ts): the acquire function and the dispatcher read the same one.
 */
export function limiterEnvironment(limiter: LimiterBuckets, maxWaitMs: number): Record<string, string> {
  const startJitterMs = startJitterOf(limiter);
  return {
    [LimiterEnv.TABLE_NAME]: limiter.table.tableName,
    [LimiterEnv.LIMITER_NAME]: limiter.limiterName,
    [LimiterEnv.RATE_PER_SECOND]: String(limiter.ratePerSecond),
    [LimiterEnv.BURST]: String(limiter.burst),
    [LimiterEnv.SHARDS]: String(limiter.shards),
    [LimiterEnv.MAX_WAIT_MS]: String(maxWaitMs),
    ...(multiItem(limiter) ? { [LimiterEnv.LIMITS]: limitsJson(limiter.limits!) } : {}),
    ...(limiter.keyLimits?.length ? { [LimiterEnv.KEY_LIMITS]: limitsJson(limiter.keyLimits) } : {}),
    ...(limiter.adaptive !== undefined ? { [LimiterEnv.ADAPTIVE]: adaptiveJson(limiter.adaptive, limiter.ratePerSecond) } : {}),
    ...(startJitterMs !== undefined ? { [LimiterEnv.START_JITTER_MS]: String(startJitterMs) } : {}),
    // the handlers' default (0.2) is not written
    ...(limiter.priorityReserve !== undefined && limiter.priorityReserve !== DEFAULT_PRIORITY_RESERVE
      ? { [LimiterEnv.PRIORITY_RESERVE]: String(limiter.priorityReserve) } : {}),
  };
}

/**
 * Exactly the calls the limiter code makes on the limiter's table (and its key, if any), on its own items only:
 * every item it reads or writes has a partition key starting `<limiterName>#`, so on a table shared by several
 * limiters each role can touch its own items and no other (`dynamodb:LeadingKeys`).
 */
export function grantBucketAccess(limiter: Pick<LimiterBuckets, 'table' | 'limiterName' | 'limits' | 'keyLimits'>, grantee: iam.IGrantable): iam.Grant {
  const grant = iam.Grant.addToPrincipal({
    grantee,
    // several limits: a key's buckets are one item, written whole (PutItem conditioned on its write counter)
    actions: multiItem(limiter) ? ['dynamodb:UpdateItem', 'dynamodb:GetItem', 'dynamodb:PutItem'] : ['dynamodb:UpdateItem', 'dynamodb:GetItem'],
    resourceArns: [limiter.table.tableArn],
    conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${limiter.limiterName}#*`] } },
  });
  const key = limiter.table.encryptionKey?.grantEncryptDecrypt(grantee);
  return key ? grant.combine(key) : grant;
}
