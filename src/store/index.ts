// The block store: devices, volumes and header selection. Knows offsets, not trees.
export * from './bufcache';
export * from './device';
export * from './volumes';
export * from './native';
export { syncTogether } from './together';
