; Scopes nib documents, tests and keeps whole in completion prompts.
; Captures: @function, @method, @class (a node captured twice is a @method).

(function_definition) @function
(class_definition) @class

; A function directly in a class body, decorated or not, is a method.
(class_definition
  body: (block (function_definition) @method))
(class_definition
  body: (block (decorated_definition definition: (function_definition) @method)))
