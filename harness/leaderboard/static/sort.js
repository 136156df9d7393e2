(function () {
  function key(cell) {
    var v = cell.getAttribute('data-value');
    return v === null || v === '' ? null : parseFloat(v);
  }
  function sortBy(table, th, col) {
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('thead th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var ca = a.cells[col], cb = b.cells[col];
      var ka = key(ca), kb = key(cb), d;
      if (ka !== null && kb !== null) { d = ka - kb; }
      else if (ka !== null || kb !== null) { return ka === null ? 1 : -1; }
      else { d = ca.textContent.localeCompare(cb.textContent); }
      return asc ? d : -d;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (th, col) {
      th.tabIndex = 0;
      th.addEventListener('click', function () { sortBy(table, th, col); });
      th.addEventListener('keydown', function (ev) { if (ev.key === 'Enter') { sortBy(table, th, col); } });
    });
  });
})();