-- CSV import: every row validated first; all or nothing; every bad row reported.
\set SHOW_CONTEXT never
SELECT donatello.create_organization('Import Test', 'import-test') AS org \gset
SELECT donatello.create_department(:'org', 'Design') AS design \gset
SELECT donatello.create_user(:'org', 'existing@import.test', 'Existing') IS NOT NULL AS seeded;

-- the CSV splitter (RFC 4180)
SELECT * FROM donatello.csv_rows(E'\xEF\xBB\xBFa,b\r\n"quoted, comma","with ""quotes"""\n"multi\nline",x\n\n,\nlast,row');
SELECT * FROM donatello.csv_rows(E'a,"unterminated\nb,c');
SELECT * FROM donatello.csv_rows(E'a,"x"y,b');

-- a file with every kind of problem imports nothing and reports each row
SELECT jsonb_pretty(donatello.import_users(:'org', E'email,name,department\n'
    'ok@import.test,Okay,design\n'
    'not-an-email,Bad Email,\n'
    'dup@import.test,First,\n'
    'DUP@import.test,Second,\n'
    'existing@IMPORT.test,Existing Again,\n'
    'nodept@import.test,No Dept,Sales\n'
    'empty-name@import.test,,\n'
    'too,many,fields,here\n'));
SELECT count(*) AS users_after_failed_import FROM donatello.users WHERE org_id = :'org';

-- header problems
SELECT donatello.import_users(:'org', E'mail,name\nx@import.test,X\n');
SELECT donatello.import_users(:'org', E'email,name,email\nx@import.test,X,y\n');
SELECT donatello.import_users(:'org', '');
SELECT donatello.import_users(:'org', E'email,name\n"broken,X\n');
SELECT donatello.import_users(:'org', NULL);
SELECT donatello.import_users('00000000-0000-0000-0000-00000000dead', E'email,name\n');

-- a good file imports every row in one go; department names match case-insensitively
SELECT donatello.import_users(:'org', E'Name,EMAIL,Department\n'
    'Anna,anna@import.test,DESIGN\n'
    '"Bertrand, Jr.",bertrand@import.test,\n'
    '\n'
    'Chen,chen@import.test,Design\n');
SELECT u.email, u.name, d.name AS department
  FROM donatello.users u LEFT JOIN donatello.departments d ON d.id = u.department_id
 WHERE u.org_id = :'org' ORDER BY u.email;

-- importing the same file again: every row is now a duplicate of the database
SELECT donatello.import_users(:'org', E'email,name\nanna@import.test,Anna\n');
