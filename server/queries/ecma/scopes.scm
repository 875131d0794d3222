; Scopes nib documents, tests and keeps whole in completion prompts (JavaScript, and the
; base of TypeScript's). Captures: @function, @method, @class.

[(function_declaration) (generator_function_declaration)] @function
(method_definition) @method
(class_declaration) @class

; `const f = (x) => ...` and `const f = function () {}`: the declarator is the scope.
(variable_declarator
  value: [(arrow_function) (function_expression)]) @function
