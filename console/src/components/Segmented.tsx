/** A row of toggle buttons of which one is pressed, e.g. the usage page's time range. */
export function Segmented<T extends string>({
  legend,
  options,
  value,
  onChange,
}: {
  /** Names the group for screen readers. */
  legend: string;
  /** Each option's value and label. */
  options: readonly (readonly [T, string])[];
  value: T;
  onChange: (value: T) => void;
}) {
  return (
    <fieldset className="segmented">
      <legend className="visually-hidden">{legend}</legend>
      {options.map(([option, label]) => (
        <button
          key={option}
          type="button"
          className={option === value ? 'segment active' : 'segment'}
          aria-pressed={option === value}
          onClick={() => onChange(option)}
        >
          {label}
        </button>
      ))}
    </fieldset>
  );
}
