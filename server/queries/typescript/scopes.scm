; TypeScript's scopes beyond JavaScript's (ecma/scopes.scm).
(abstract_class_declaration) @class
