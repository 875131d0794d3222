; Import statements; nib keeps the file's top-level ones in completion prompts.
[(use_declaration) (extern_crate_declaration)] @import
