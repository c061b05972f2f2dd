// The little of two untyped peer packages that the `peers` bench section uses (their @types are not installed).

declare module 'pouchdb-node' {
  interface PouchDatabase {
    info(): Promise<{ doc_count: number }>;
    close(): Promise<void>;
  }
  interface PouchDBConstructor {
    new (name: string): PouchDatabase;
    defaults(options: { prefix: string }): PouchDBConstructor;
  }
  const PouchDB: PouchDBConstructor;
  export default PouchDB;
}

declare module 'express-pouchdb' {
  import type { RequestListener } from 'node:http';
  /** Express app with CouchDB's HTTP API over the given PouchDB constructor. */
  export default function expressPouchDB(
    PouchDB: unknown,
    options?: { mode?: 'minimumForPouchDB' | 'fullCouchDB' },
  ): RequestListener;
}
