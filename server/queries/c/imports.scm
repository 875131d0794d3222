; `#include` lines; nib keeps the file's top-level ones in completion prompts.
(preproc_include) @import
