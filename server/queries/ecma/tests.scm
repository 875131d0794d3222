; Tests in a test file: `test(title, …)` and `it(title, …)` statements.
; Captures: @test (the statement), @name (the title, quotes included).

((expression_statement
   .
   (call_expression
     function: (identifier) @_callee
     arguments: (arguments . (_) @name))) @test
  (#any-of? @_callee "test" "it"))
