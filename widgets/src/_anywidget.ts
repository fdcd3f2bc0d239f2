// The slice of anywidget's front-end model API that our widgets use.
// (Files starting with "_" are shared modules, not bundle entries.)

export type Callback = (...args: unknown[]) => void;

export interface AnyModel<T extends object> {
  get<K extends keyof T & string>(name: K): T[K];
  set<K extends keyof T & string>(name: K, value: T[K]): void;
  save_changes(): void;
  on(event: string, callback: Callback): void;
  off(event?: string | null, callback?: Callback | null): void;
  send(content: unknown, callbacks?: unknown, buffers?: ArrayBuffer[]): void;
}

export interface RenderProps<T extends object> {
  model: AnyModel<T>;
  el: HTMLElement;
}

/** What `render` may return: a cleanup called when the view is removed. */
export type Cleanup = () => void;

export function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}
