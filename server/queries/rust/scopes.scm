; Scopes nib documents, tests and keeps whole in completion prompts.
; Captures: @function, @method, @class (a node captured twice is a @method).

[(function_item) (function_signature_item)] @function
[(struct_item) (enum_item) (union_item) (trait_item) (impl_item)] @class

; A function directly in an impl or trait body is a method.
(impl_item
  body: (declaration_list [(function_item) (function_signature_item)] @method))
(trait_item
  body: (declaration_list [(function_item) (function_signature_item)] @method))
