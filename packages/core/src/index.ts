// What the sidebar and the notebook widgets share. The types and state sets come from
// ./schema, generated from the Python models' JSON Schema at build time.
export * from './schema.js';
export * from './sets.js';
export * from './status.js';
export * from './dom.js';
export * from './graph.js';
