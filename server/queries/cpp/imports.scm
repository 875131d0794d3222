; `#include` lines and `using` declarations; nib keeps the file's top-level ones in
; completion prompts.
[(preproc_include) (using_declaration)] @import
