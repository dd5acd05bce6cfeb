/**
 * istiod's Kubernetes side of the ambient control loop: typed views of the objects it reads, label helpers,
 * informers, the status writer, and the controller wiring informers → ambient index → xDS server.
 */
export {
  AmbientController,
  type AmbientControllerOptions,
  type AmbientObserver,
  AmbientPipeline,
  type AmbientPipelineOptions,
} from './controller.ts';
export {
  type InformerEvent,
  InformerSet,
  type InformerSetOptions,
  KIND_SOURCES,
  type KindSource,
} from './informers.ts';
export * from './labels.ts';
export { InformerNodeIndex } from './nodeindex.ts';
export { KubeStatusWriter, mergeConditions, type StatusSink } from './status.ts';
export type * from './types.ts';
