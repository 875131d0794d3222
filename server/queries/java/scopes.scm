; Scopes nib documents and keeps whole in completion prompts.
; Captures: @function, @method, @class.

[(method_declaration) (constructor_declaration)] @method
[
  (class_declaration)
  (interface_declaration)
  (enum_declaration)
  (record_declaration)
] @class
