// The page's elements by id: one definition for every module.
'use strict';

export const $ = (id) => document.getElementById(id);
