; Scopes nib documents and keeps whole in completion prompts.
; Captures: @function, @method, @class (a node captured twice is a @method).

(function_definition) @function
(class_specifier body: (_)) @class
(struct_specifier body: (_)) @class
(union_specifier body: (_)) @class
(enum_specifier body: (_)) @class

; A function defined in a class body, templated or not, is a method.
(field_declaration_list (function_definition) @method)
(field_declaration_list (template_declaration (function_definition) @method))
