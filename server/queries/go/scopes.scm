; Scopes nib documents, tests and keeps whole in completion prompts.
; Captures: @function, @method, @class.

(function_declaration) @function
(method_declaration) @method
(type_spec) @class
