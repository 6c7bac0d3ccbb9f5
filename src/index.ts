export * from './errors';
export * from './rate-limiter';
