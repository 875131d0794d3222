; Tests in a test file: functions named `test…`, at any depth (methods of a test class too).
; Captures: @test (the test), @name (its name), @start (where its text starts: decorators).

((function_definition name: (identifier) @name) @test
  (#match? @name "^test"))

((decorated_definition
   definition: (function_definition name: (identifier) @name) @test) @start
  (#match? @name "^test"))
