export * from './errors';
export * from './rate-limiter';
export * from './rate-limited-task';
export * from './retry-policy';
export * from './throttled-map';
export * from './buffered-queue-consumer';
export * from './monitoring/throttle-dashboard';
export * from './throttle-checks';
