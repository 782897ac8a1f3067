/** Server text with `backticked` commands shown as code (the server's messages use them). */
export function RichText({ text }: { text: string }) {
  const parts = text.split(/`([^`]+)`/);
  return (
    <>
      {parts.map((part, i) =>
        // Odd indexes are the backticked parts; the index is a stable key for a fixed text.
        // biome-ignore lint/suspicious/noArrayIndexKey: the parts of one string never reorder
        i % 2 === 1 ? <code key={i}>{part}</code> : <span key={i}>{part}</span>,
      )}
    </>
  );
}
