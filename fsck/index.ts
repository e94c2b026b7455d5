// fsck_hammer2: verification and repair of HAMMER2 images on the shared media layer.
export * from './findings';
export * from './check';
export * from './repair';
export * from './output';
export { BlockBits, windows } from './bitmap';
