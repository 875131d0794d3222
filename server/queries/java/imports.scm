; Import declarations; nib keeps the file's top-level ones in completion prompts.
(import_declaration) @import
