; Scopes nib documents and keeps whole in completion prompts.
; Captures: @function, @class (a struct, union or enum with a body).

(function_definition) @function
(struct_specifier body: (_)) @class
(union_specifier body: (_)) @class
(enum_specifier body: (_)) @class
