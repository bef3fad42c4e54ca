# cython: language_level=3
"""A list with room: for the lists the request path fills item by item (header lists, the
pieces of a head), so their appends do not reallocate them (CPython grows an empty list at
its first append and again at its fifth, and list.append would shrink a list with room to
its size first: ``push`` fills the room as it is)."""
from cpython.list cimport PyList_New


cdef extern from *:
    """
    static inline void fg_list_set_empty(PyObject *o) { Py_SET_SIZE((PyVarObject *)o, 0); }
    static inline int fg_list_push(PyObject *l, PyObject *x) {
        PyListObject *L = (PyListObject *)l;
        Py_ssize_t n = Py_SIZE(L);
        if (L->allocated > n) {
            Py_INCREF(x);
            PyList_SET_ITEM(l, n, x);
            Py_SET_SIZE((PyVarObject *)L, n + 1);
            return 0;
        }
        return PyList_Append(l, x);
    }
    static inline void fg_list_drop_last(PyObject *l) {
        Py_ssize_t n = Py_SIZE(l);
        if (n > 0) {
            PyObject *x = PyList_GET_ITEM(l, n - 1);
            Py_SET_SIZE((PyVarObject *)l, n - 1);
            Py_DECREF(x);
        }
    }
    """
    void fg_list_set_empty(object o)
    int fg_list_push(list l, object x) except -1
    void fg_list_drop_last(list l)


cdef inline list list_with_room(Py_ssize_t n):
    """An empty list whose first ``n`` appends reallocate nothing (the slots past its size
    are NULL and never seen: only its size counts for its items)."""
    cdef list out = PyList_New(n)
    fg_list_set_empty(out)
    return out


cdef inline int push(list l, object x) except -1:
    """``l.append(x)``, into the room of a list_with_room list without reallocating."""
    return fg_list_push(l, x)


cdef inline void drop_last(list l):
    """``del l[-1]`` (nothing when empty), keeping the list's room."""
    fg_list_drop_last(l)
