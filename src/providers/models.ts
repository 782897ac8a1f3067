/** Model-name aliasing: legacy names → current ids, from the configuration's alias table. */
export function resolveModel(aliases: Readonly<Record<string, string>>, model: string): string {
  return Object.hasOwn(aliases, model) ? (aliases[model] ?? model) : model;
}
