// The part of the WebAssembly JS API halfpipe uses. TypeScript ships these types only in lib.dom,
// which would also declare browser globals that do not exist in Node.
declare namespace WebAssembly {
  interface MemoryDescriptor {
    initial: number;
    maximum?: number;
    shared?: boolean;
  }
  class Memory {
    constructor(descriptor: MemoryDescriptor);
    readonly buffer: ArrayBuffer | SharedArrayBuffer;
    grow(delta: number): number;
  }
  class Module {
    constructor(bytes: BufferSource);
  }
  type ExportValue = ((...args: number[]) => number | void) | Memory | Global;
  type Exports = Record<string, ExportValue>;
  class Instance {
    constructor(module: Module, imports?: Imports);
    readonly exports: Exports;
  }
  class Global {
    value: number;
  }
  type ImportValue = ((...args: number[]) => number | void) | Memory | Global | number;
  type Imports = Record<string, Record<string, ImportValue>>;
  function validate(bytes: BufferSource): boolean;
}
type BufferSource = ArrayBufferView | ArrayBuffer;
