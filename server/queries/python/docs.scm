; Documentation nib recognises. Captures: @doc (documentation), @skip (what may sit between
; documentation above an item and the item). `(#set! place "body")`: the documentation is the
; first statement of the item's body instead of above it.

; A docstring: a string (or implicitly joined strings) first in the body.
((expression_statement . [(string) (concatenated_string)]) @doc
  (#set! place "body"))
