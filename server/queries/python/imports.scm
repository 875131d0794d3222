; Import statements; nib keeps the file's top-level ones in completion prompts.
[
  (import_statement)
  (import_from_statement)
  (future_import_statement)
] @import
