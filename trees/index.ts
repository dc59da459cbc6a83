/** Pure draft-tree algorithms: EAGLE-2 expansion and reranking, verification layout, acceptance. */
export { TreeBuilder, type Frontier, type TreeOptions } from './builder.ts';
export { VerifyTree } from './verify-tree.ts';
export { Acceptance, acceptGreedy, acceptSampled } from './accept.ts';
export { addSubtreeAcceptance } from './subtree-acceptance.ts';
