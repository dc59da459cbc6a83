/** Pure draft-tree algorithms: tree shape and its limits, EAGLE-2 expansion and reranking, verification layout, acceptance. */
export { TreeBuilder, type Frontier } from './builder.ts';
export { TREE_LIMITS, treeShapeProblem, type TreeShape, type TreeShapeNames } from './shape.ts';
export { VerifyTree } from './verify-tree.ts';
export { Acceptance, acceptGreedy, acceptSampled } from './accept.ts';
export { addSubtreeAcceptance } from './subtree-acceptance.ts';
