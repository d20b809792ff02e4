/**
 * Runs async tasks with at most `max` in flight. `run` waits for a free slot
 * before starting a task (that wait is the backpressure), and rethrows the
 * first failure of any task started earlier; `drain` waits for all of them.
 * Tasks' own promises never reject unobserved: a failure is kept until the
 * next `run` or `drain` reports it.
 */
export class InFlight {
  readonly #max: number;
  readonly #running = new Set<Promise<void>>();
  #failed = false;
  #error: unknown;

  constructor(max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`Cannot run ${max} tasks at once: want an integer ≥ 1`);
    this.#max = max;
  }

  get size(): number {
    return this.#running.size;
  }

  async run(task: () => Promise<void>): Promise<void> {
    this.#throwIfFailed();
    while (this.#running.size >= this.#max) {
      await Promise.race(this.#running);
      this.#throwIfFailed();
    }
    // `.then(task)` (not `task()`): a synchronous throw becomes a rejection,
    // and the slot is released only after `p` is in the set.
    const p: Promise<void> = Promise.resolve()
      .then(task)
      .catch((e: unknown) => {
        if (!this.#failed) {
          this.#failed = true;
          this.#error = e;
        }
      })
      .then(() => {
        this.#running.delete(p);
      });
    this.#running.add(p);
  }

  async drain(): Promise<void> {
    while (this.#running.size > 0) await Promise.race(this.#running);
    this.#throwIfFailed();
  }

  #throwIfFailed(): void {
    if (this.#failed) throw this.#error;
  }
}
