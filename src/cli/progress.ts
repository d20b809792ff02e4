import type { CliIO } from './io.js';

/** A one-line status on stderr, redrawn at most 10 times a second, only when stderr is a terminal. */
export class Progress {
  readonly #io: CliIO;
  readonly #enabled: boolean;
  #last = 0;
  #shown = false;

  constructor(io: CliIO) {
    this.#io = io;
    this.#enabled = io.stderr.isTTY === true && io.env['CI'] === undefined;
  }

  update(line: string, force = false): void {
    if (!this.#enabled) return;
    const now = Date.now();
    if (!force && now - this.#last < 100) return;
    this.#last = now;
    this.#io.stderr.write(`\r\x1b[2K${line}`);
    this.#shown = true;
  }

  done(): void {
    if (this.#shown) this.#io.stderr.write('\r\x1b[2K');
    this.#shown = false;
  }
}
