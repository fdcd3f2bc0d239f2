/**
 * Whether `value` is one of `set` (a generated state set such as RUNNING_RUN_STATES),
 * narrowing it to the set's type; `Array.prototype.includes` would not accept a wider
 * string.
 */
export function inSet<T extends string>(set: readonly T[], value: string | null | undefined): value is T {
  return value !== null && value !== undefined && (set as readonly string[]).includes(value);
}
